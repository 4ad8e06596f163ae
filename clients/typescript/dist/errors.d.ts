/**
 * Errors: `TidingsError`, a server refusal with its HTTP status, the
 * server's error code and `Retry-After`, and how a non-2xx answer becomes
 * one.
 *
 * Contract: every refusal the client reports is a `TidingsError`; its
 * `permanent` is true for what a later attempt may not get (a 4xx other
 * than 408 and 429), which is what stops a subscription's reconnecting.
 */
/** A server refusal: the HTTP status and the server's JSON error. */
export declare class TidingsError extends Error {
    readonly status: number;
    readonly code: string;
    /** Seconds, from `Retry-After`, when trying later can help. */
    readonly retryAfter?: number;
    constructor(status: number, code: string, message: string, retryAfter?: number);
    /** True for refusals that a later attempt may not get (not 408, 429, 5xx). */
    get permanent(): boolean;
}
/** The server's refusal in `res` as a {@link TidingsError} (internal). */
export declare function errorFrom(res: Response): Promise<TidingsError>;
