<?php

// Appends the body to data.txt (a file of its code) and to notes/log.txt (a folder it makes), in its working
// folder (/kubeless, an emptyDir the pod may write to); returns both.
function handler($event, $context)
{
    if (!is_dir('notes')) {
        mkdir('notes');
    }
    foreach (['data.txt', 'notes/log.txt'] as $path) {
        file_put_contents($path, $event->data, FILE_APPEND);
    }
    return str_replace("\n", '', file_get_contents('data.txt')) . '|' . file_get_contents('notes/log.txt');
}
