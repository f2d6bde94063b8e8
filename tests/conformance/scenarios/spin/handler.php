<?php

function handler($event, $context)
{
    while (true) {
    }
}
