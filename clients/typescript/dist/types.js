/**
 * The public types: events and typed event maps, the options of every
 * call, history pages, subscriptions and consumers.
 *
 * Types only: its build is an empty module. The fields of events, pages
 * and consumer info are those of the server's JSON (`next_after`,
 * `last_seq`), passed through as the server sends them.
 */
export {};
