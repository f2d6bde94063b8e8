<?php

function handler($event, $context)
{
    $env = getenv('MY_VAR');
    return [
        'function-name' => $context->{'function-name'},
        'timeout' => $context->timeout,
        'runtime' => $context->runtime,
        'memory-limit' => $context->{'memory-limit'},
        'env' => $env === false ? null : $env,
        'hostname' => getenv('HOSTNAME') === false ? null : getenv('HOSTNAME'),
    ];
}
