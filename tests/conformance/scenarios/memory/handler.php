<?php

// Allocate (and touch) as many MiB more as the body says; answer how many are held, two seconds later.
$held = []; // module state: what earlier calls allocated stays allocated

function handler($event, $context)
{
    global $held;
    ini_set('memory_limit', '-1'); // PHP's own limit aside: the container's is what this scenario meets
    for ($i = 0; $i < (int) $event->data; $i++) {
        $held[] = str_repeat('x', 1 << 20);
    }
    sleep(2);
    return (string) count($held);
}
