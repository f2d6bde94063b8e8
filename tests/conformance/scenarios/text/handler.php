<?php

// The characters of data.txt ("é") read as text in PHP's default charset: 1 in the pod (UTF-8).
function handler($event, $context)
{
    return (string) mb_strlen(trim(file_get_contents('data.txt')));
}
