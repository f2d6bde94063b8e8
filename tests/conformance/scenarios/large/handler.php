<?php

function handler($event, $context)
{
    return (string) strlen($event->data);
}
