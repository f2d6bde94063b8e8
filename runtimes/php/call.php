<?php
/*
 * Kubeless PHP runtime: one call in a runner. Builds the event and context as legacy Kubeless PHP
 * did (PSR-7 request, $_SERVER/$_GET/$_POST), calls the function and renders its result.
 */

function kl_reason(int $status): string
{
    static $reasons = [200 => 'OK', 201 => 'Created', 202 => 'Accepted', 204 => 'No Content',
        301 => 'Moved Permanently', 302 => 'Found', 304 => 'Not Modified', 400 => 'Bad Request',
        401 => 'Unauthorized', 403 => 'Forbidden', 404 => 'Not Found', 405 => 'Method Not Allowed',
        408 => 'Request Timeout', 413 => 'Payload Too Large', 500 => 'Internal Server Error',
        502 => 'Bad Gateway', 503 => 'Service Unavailable'];
    return $reasons[$status] ?? '';
}

/** Builds the event and context as legacy Kubeless PHP did, calls the function, renders the result. */
function kl_run_call(array $req, array $cfg): array
{
    [$method, $target, $version, $headers, $body, $peer] = $req;
    $path = $target;
    $query = '';
    if (($q = strpos($target, '?')) !== false) {
        $path = substr($target, 0, $q);
        $query = substr($target, $q + 1);
    }
    $lower = [];
    $server = ['REQUEST_METHOD' => $method, 'REQUEST_URI' => $target, 'QUERY_STRING' => $query,
        'SERVER_PROTOCOL' => 'HTTP/' . $version, 'REMOTE_ADDR' => $peer, 'SCRIPT_NAME' => '/',
        'SERVER_PORT' => (string) $cfg['port'], 'REQUEST_TIME_FLOAT' => microtime(true),
        'REQUEST_TIME' => time(), 'CONTENT_LENGTH' => (string) strlen($body)];
    $grouped = [];
    foreach ($headers as [$name, $value]) {
        $l = strtolower($name);
        $lower[$l] = isset($lower[$l]) ? $lower[$l] . ', ' . $value : $value;
        $grouped[$name][] = $value;
        $key = strtoupper(str_replace('-', '_', $name));
        if ($key === 'CONTENT_TYPE') {
            $server['CONTENT_TYPE'] = $value;
        } elseif ($key !== 'CONTENT_LENGTH') {
            $server['HTTP_' . $key] = $lower[$l];
        }
    }
    $_SERVER = $server + $GLOBALS['__kl_base_server'];
    parse_str($query, $_GET);
    $_POST = [];
    $ctype = $lower['content-type'] ?? null;
    if ($ctype !== null && stripos($ctype, 'application/x-www-form-urlencoded') === 0) {
        parse_str($body, $_POST);
    }

    $host = $lower['host'] ?? ('localhost:' . $cfg['port']);
    $hostname = $host;
    $port = null;
    if (preg_match('/^(.*):(\d+)$/', $host, $m)) {
        [$hostname, $port] = [$m[1], (int) $m[2]];
    }
    $request = kl_psr7_request($method, $hostname, $port, $path, $query, $grouped, kl_cookies($lower['cookie'] ?? ''), $_SERVER, $body);
    if ($_POST) {
        $request = $request->withParsedBody($_POST);
    } elseif ($ctype !== null && preg_match('#^application/(.+\+)?json#i', $ctype)) {
        $parsed = json_decode($body, true);
        if (is_array($parsed)) {
            $request = $request->withParsedBody($parsed);
        }
    }
    $response = new \Slim\Psr7\Response();

    // contract §5: exactly application/json -> json_decode (stdClass), anything else the raw body
    $data = $ctype === 'application/json' ? json_decode($body) : $body;
    if ($ctype === 'application/json' && $body !== '' && json_last_error() !== JSON_ERROR_NONE) {
        // the client's error, not the function's: not counted as a call
        return kl_reply(400, [['Content-Type', 'text/plain']], 'invalid JSON body (Content-Type: application/json): '
            . json_last_error_msg() . "\n", false, false);
    }
    $event = (object) [
        'data' => $data,
        'event-id' => $lower['event-id'] ?? null,
        'event-type' => $lower['event-type'] ?? null,
        'event-time' => $lower['event-time'] ?? null,
        'event-namespace' => $lower['event-namespace'] ?? null,
        'extensions' => (object) ['request' => $request, 'response' => $response],
    ];
    $context = (object) [
        'function-name' => $cfg['handler'],
        'timeout' => $cfg['timeout_raw'],
        'runtime' => kl_env('FUNC_RUNTIME'),
        'memory-limit' => kl_env('FUNC_MEMORY_LIMIT'),
    ];

    try {
        $result = call_user_func($cfg['handler'], $event, $context); // callable: checked at load
    } catch (Throwable $e) {
        kl_log('function raised ' . kl_error_text($e) . "\n" . $e->getTraceAsString());
        return kl_reply(500, [['Content-Type', 'text/plain']], $e->getMessage() . "\n", true, true);
    }
    try {
        return kl_render($result, $response);
    } catch (Throwable $e) {
        kl_log('cannot render the function\'s result: ' . kl_error_text($e));
        return kl_reply(500, [['Content-Type', 'text/plain']], "Internal Server Error\n", true, true);
    }
}

function kl_psr7_request(string $method, string $host, ?int $port, string $path, string $query, array $headers,
    array $cookies, array $server, string $body)
{
    return new \Slim\Psr7\Request(
        $method,
        new \Slim\Psr7\Uri('http', $host, $port, $path === '' ? '/' : $path, $query),
        new \Slim\Psr7\Headers($headers, $server),
        $cookies,
        $server,
        (new \Slim\Psr7\Factory\StreamFactory())->createStream($body)
    );
}

/** Loads the PSR-7 classes once in the zygote, so that a new runner's first call is not slower. */
function kl_warm_up(): void
{
    $request = kl_psr7_request('POST', 'localhost', 8080, '/', 'a=1', ['Host' => ['localhost']], [], [], '{}');
    $request->withParsedBody([])->getHeaderLine('Host');
    $response = (new \Slim\Psr7\Response())->withStatus(201)->withHeader('X', 'y');
    $response->getBody()->write('x');
    $response->getReasonPhrase();
    (string) $response->getBody();
}

function kl_cookies(string $header): array
{
    $out = [];
    foreach (explode(';', $header) as $pair) {
        if (strpos($pair, '=') !== false) {
            [$k, $v] = explode('=', $pair, 2);
            $out[trim($k)] = urldecode(trim($v));
        }
    }
    return $out;
}

function kl_reply(int $status, array $headers, string $body, bool $counted, bool $failed, string $reason = ''): array
{
    return ['status' => $status, 'reason' => $reason !== '' ? $reason : kl_reason($status),
        'headers' => $headers, 'body' => $body, 'counted' => $counted, 'failed' => $failed];
}

/** Return value -> response: a PSR-7 response sets status/headers/body; strings are the body. */
function kl_render($result, $response): array
{
    if ($result instanceof \Psr\Http\Message\ResponseInterface) {
        $headers = [];
        foreach ($result->getHeaders() as $name => $values) {
            foreach ($values as $v) {
                $headers[] = [$name, $v];
            }
        }
        if (!$result->hasHeader('Content-Type')) {
            $headers[] = ['Content-Type', 'text/html; charset=UTF-8'];
        }
        return kl_reply($result->getStatusCode(), $headers, (string) $result->getBody(), true, false, $result->getReasonPhrase());
    }
    if ($result === null) {
        // nothing returned: whatever the function wrote into $event->extensions->response's body
        return kl_reply(200, [['Content-Type', 'text/html; charset=UTF-8']], (string) $response->getBody(), true, false);
    }
    if (is_array($result) || ($result instanceof stdClass) || ($result instanceof JsonSerializable)) {
        $json = json_encode($result, JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR);
        return kl_reply(200, [['Content-Type', 'application/json']], $json, true, false);
    }
    if (is_bool($result)) {
        $result = $result ? '1' : '';
    }
    return kl_reply(200, [['Content-Type', 'text/html; charset=UTF-8']], (string) $result, true, false);
}
