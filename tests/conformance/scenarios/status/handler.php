<?php

function handler($event, $context)
{
    // PSR-7 responses are immutable: return the modified copy
    $response = $event->extensions->response;
    $response->getBody()->write('created');
    return $response->withStatus(201)->withHeader('X-Custom', 'yes');
}
