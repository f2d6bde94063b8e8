<?php
// a library in the function's folder, installed from its composer.json (a path repository: libs/greeting)

function handler($event, $context)
{
    return \Greeting\Words::TEXT;
}
