<?php

// Output at load without a newline: the runtime's next line (in the pod, its log's next line) follows it.
fwrite(STDOUT, 'loading config...');

function handler($event, $context)
{
    return 'hello world';
}
