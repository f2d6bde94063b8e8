<?php

function handler($event, $context)
{
    $data = $event->data;
    if (!is_string($data)) {
        $data = json_encode($data);
    }
    return [
        'data' => $data,
        'event-id' => $event->{'event-id'},
        'event-type' => $event->{'event-type'},
        'event-time' => $event->{'event-time'},
        'event-namespace' => $event->{'event-namespace'},
    ];
}
