<?php

// Waits (up to 60 s) until the file named by the body exists, then returns data.txt read by a path
// relative to the working folder: a call still in flight while the code is saved.
function handler($event, $context)
{
    $release = (string) $event->data;
    $deadline = microtime(true) + 60;
    while (microtime(true) < $deadline) {
        clearstatcache();
        if (file_exists($release)) {
            break;
        }
        usleep(10000);
    }
    return trim(file_get_contents('data.txt'));
}
