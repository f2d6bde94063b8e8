<?php

// Prints a line it does not end (no newline): the runtime's access line follows it on stdout.
function handler($event, $context)
{
    fwrite(STDOUT, 'no newline here');
    return 'done';
}
