<?php

function handler($event, $context)
{
    // what a call may leave running: a child, and a shell in a session of its own with a child of its own
    $seconds = $event->data;
    $child = proc_open(['sleep', $seconds], [], $pipes);
    $shell = proc_open(['setsid', 'sh', '-c', "sleep $seconds & wait"], [], $pipes);
    usleep((int) round((float) $seconds * 1e6));
    return 'done';
}
