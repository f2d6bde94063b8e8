package io.kubeless;

import com.sun.net.httpserver.HttpExchange;

/**
 * The call's native request/response object (kubeless-local's addition; Go's runtime has
 * {@code Extensions.Request}/{@code Response}). {@code Request} and {@code Response} are the same
 * {@link HttpExchange}: read headers and the URI from it, or answer through it
 * ({@code sendResponseHeaders}, then the body): a function that has answered this way has its
 * return value ignored.
 */
public class Extensions {
    public final HttpExchange Request;
    public final HttpExchange Response;

    public Extensions(HttpExchange exchange) {
        this.Request = exchange;
        this.Response = exchange;
    }

    public HttpExchange getRequest() { return Request; }
    public HttpExchange getResponse() { return Response; }
}
