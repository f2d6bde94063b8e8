<?php

function handler($event, $context)
{
    usleep((int) round((float) $event->data * 1e6));
    return 'done';
}
