<?php

function handler($event, $context)
{
    if ($event->data === 'boom') {
        throw new RuntimeException('boom');
    }
    return 'ok';
}
