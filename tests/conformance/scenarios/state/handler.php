<?php

$calls = 0;

function handler($event, $context)
{
    global $calls;
    $calls++;
    return (string) $calls;
}
