<?php

function handler($event, $context)
{
    // what a call may leave running: a child, and a shell in a session of its own with a child of its own
    $seconds = $event->data;
    $child = proc_open(['sleep', $seconds], [], $pipes);
    $shell = proc_open(['setsid', 'sh', '-c', "sleep $seconds & wait"], [], $pipes);
    // usleep ends early when a signal comes (SIGCHLD of an earlier call's child): sleep the time out
    $until = microtime(true) + (float) $seconds;
    while (($left = $until - microtime(true)) > 0) {
        usleep((int) min($left * 1e6, 1e6));
    }
    return 'done';
}
