<?php

/**
 * Kubeless calls this with $event (->data, ->{'event-id'}, ->extensions->request a PSR-7 request,
 * ->extensions->response a PSR-7 response) and $context (->{'function-name'}, ->timeout, ...).
 * Return a string for the body, an array for JSON, or a PSR-7 response for status and headers.
 */
function hello($event, $context)
{
    error_log('called with ' . json_encode($event->data));
    if (is_object($event->data)) {
        return ['hello' => 'world', 'data' => $event->data];
    }
    return 'hello world';
}
