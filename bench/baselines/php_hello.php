<?php
// Baseline: a bare `php -S` hello (the built-in server, PHP_CLI_SERVER_WORKERS workers).
echo "hello world";
