<?php

// Prints a line naming its data, then answers the data.
function handler($event, $context)
{
    $text = (string) $event->data;
    echo "handling $text\n";
    return $text;
}
