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
export class TidingsError extends Error {
    status;
    code;
    /** Seconds, from `Retry-After`, when trying later can help. */
    retryAfter;
    constructor(status, code, message, retryAfter) {
        super(message);
        this.name = "TidingsError";
        this.status = status;
        this.code = code;
        this.retryAfter = retryAfter;
    }
    /** True for refusals that a later attempt may not get (not 408, 429, 5xx). */
    get permanent() {
        return this.status >= 400 && this.status < 500 && this.status !== 408 && this.status !== 429;
    }
}
/** The server's refusal in `res` as a {@link TidingsError} (internal). */
export async function errorFrom(res) {
    const text = await res.text().catch(() => "");
    const retry = res.headers.get("retry-after");
    const retryAfter = retry !== null && /^\d+$/.test(retry) ? Number(retry) : undefined;
    try {
        const body = JSON.parse(text);
        if (body && typeof body.error === "string") {
            return new TidingsError(res.status, body.code ?? "error", body.error, retryAfter);
        }
    }
    catch {
        // not JSON: fall through
    }
    return new TidingsError(res.status, "http_error", text.trim() || res.statusText || `HTTP ${res.status}`, retryAfter);
}
