<?php

function handler($event, $context)
{
    $request = $event->extensions->request; // a PSR-7 ServerRequestInterface, as with legacy Slim
    $q = $request->getQueryParams()['q'] ?? '';
    return $request->getHeaderLine('X-Test') . '|' . $q;
}
