<?php

function handler($event, $context)
{
    // a JSON body arrives decoded (stdClass/array): the runtime serialises those as JSON
    return $event->data;
}
