<?php

// `sleep`: a runaway call (30 s); otherwise data.txt beside the handler, read by a relative path.
function handler($event, $context)
{
    if ($event->data === 'sleep') {
        sleep(30);
        return 'woke up';
    }
    return trim(file_get_contents('data.txt'));
}
