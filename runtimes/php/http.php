<?php
/*
 * Kubeless PHP runtime: HTTP/1.1 on FUNC_PORT for the server process (non-blocking, select()
 * driven): accept, parse requests (Content-Length, chunked, Expect: 100-continue, pipelining),
 * /healthz and /metrics, write responses and the access log, close idle keep-alive connections.
 * A parsed function call goes to KlPool::startCall().
 */

trait KlHttp
{
    private static string $TOKEN = '/^[!#$%&\'*+\-.^_`|~0-9A-Za-z]+$/'; // an RFC 7230 header name

    private function accept(): void
    {
        for ($i = 0; $i < 64; $i++) {
            $s = @stream_socket_accept($this->listen, 0, $peer);
            if ($s === false) {
                return;
            }
            stream_set_blocking($s, false);
            if (function_exists('socket_import_stream') && ($sock = socket_import_stream($s))) {
                @socket_set_option($sock, SOL_TCP, TCP_NODELAY, 1);
            }
            $this->conns[(int) $s] = ['sock' => $s, 'in' => '', 'out' => '', 'busy' => false, 'close' => false,
                'peer' => preg_replace('/:\d+$/', '', (string) $peer), 'continued' => false, 'req' => null,
                'seen' => microtime(true)];
        }
    }

    private function readConn(int $id): void
    {
        $c = &$this->conns[$id];
        $c['seen'] = microtime(true);
        $chunk = @fread($c['sock'], 1 << 20);
        if ($chunk === '' || $chunk === false) {
            if (feof($c['sock'])) {
                unset($c);
                $this->closeConn($id);
            }
            return;
        }
        $c['in'] .= $chunk;
        unset($c);
        $this->parse($id);
    }

    /** Parses one request off the connection's buffer when it is complete. */
    private function parse(int $id): void
    {
        $c = &$this->conns[$id];
        if ($c['busy'] || $c['close']) {
            return;
        }
        $end = strpos($c['in'], "\r\n\r\n");
        if ($end === false) {
            if (strlen($c['in']) > 65536) {
                unset($c);
                $this->plainError($id, 431, 'Request Header Fields Too Large');
            }
            return;
        }
        $lines = explode("\r\n", substr($c['in'], 0, $end));
        $parts = explode(' ', array_shift($lines));
        if (count($parts) !== 3 || !preg_match('#^HTTP/(1\.[01])$#', $parts[2], $vm)) {
            unset($c);
            $this->plainError($id, 400, 'Bad Request');
            return;
        }
        [$method, $target] = $parts;
        $version = $vm[1];
        // a malformed escape in the path is the client's error (as Go's and Ruby's servers answer)
        $malformed = preg_match('/%(?![0-9A-Fa-f]{2})/', (string) strtok($target, '?')) === 1;
        $headers = [];
        $lower = [];
        foreach ($lines as $line) {
            $colon = strpos($line, ':');
            if ($colon === false) {
                continue;
            }
            $name = substr($line, 0, $colon);
            $value = trim(substr($line, $colon + 1));
            // RFC 7230 names and values (what the PSR-7 request accepts): anything else is a bad request
            $malformed = $malformed || !preg_match(self::$TOKEN, $name) || !preg_match('/^[ \t\x21-\x7E\x80-\xFF]*$/', $value);
            $headers[] = [$name, $value];
            $lower[strtolower($name)] = $value;
        }
        if ($malformed) {
            unset($c);
            $this->plainError($id, 400, 'Bad Request');
            return;
        }
        $bodyStart = $end + 4;
        if (isset($lower['transfer-encoding']) && stripos($lower['transfer-encoding'], 'chunked') !== false) {
            $this->maybeContinue($c, $lower);
            $decoded = self::dechunk($c['in'], $bodyStart, $this->cfg['body_max']);
            if ($decoded === null) {
                return;
            }
            if ($decoded === false) {
                unset($c);
                $this->plainError($id, 413, 'Request Entity Too Large');
                return;
            }
            [$body, $consumed] = $decoded;
        } else {
            $len = (int) ($lower['content-length'] ?? 0);
            if ($len > $this->cfg['body_max']) {
                unset($c);
                $this->plainError($id, 413, 'Request Entity Too Large');
                return;
            }
            if (strlen($c['in']) < $bodyStart + $len) {
                $this->maybeContinue($c, $lower);
                return;
            }
            $body = (string) substr($c['in'], $bodyStart, $len);
            $consumed = $bodyStart + $len;
        }
        $c['in'] = (string) substr($c['in'], $consumed);
        $c['continued'] = false;
        $connection = strtolower($lower['connection'] ?? '');
        $c['keep'] = $version === '1.1' ? $connection !== 'close' : $connection === 'keep-alive';
        $c['busy'] = true;
        $c['req'] = [$method, $target, $version, $lower['user-agent'] ?? '-', $lower['referer'] ?? '-'];
        $peer = $c['peer'];
        unset($c);

        $path = strtok($target, '?');
        if (($method === 'GET' || $method === 'HEAD') && $path === '/healthz') {
            $this->respond($id, 200, [['Content-Type', 'text/plain; charset=utf-8']], 'OK');
        } elseif (($method === 'GET' || $method === 'HEAD') && $path === '/metrics') {
            $this->respond($id, 200, [['Content-Type', 'text/plain; version=0.0.4; charset=utf-8']], $this->metrics->text());
        } else {
            $this->startCall($id, [$method, $target, $version, $headers, $body, $peer]);
        }
    }

    private function maybeContinue(array &$c, array $lower): void
    {
        if (!$c['continued'] && strtolower($lower['expect'] ?? '') === '100-continue') {
            $c['continued'] = true;
            $c['out'] .= "HTTP/1.1 100 Continue\r\n\r\n";
            $this->flushConn((int) $c['sock']);
        }
    }

    /** [body, bytes consumed] of a complete chunked body, null when incomplete, false when too large. */
    private static function dechunk(string $buf, int $pos, int $max)
    {
        $body = '';
        while (true) {
            $eol = strpos($buf, "\r\n", $pos);
            if ($eol === false) {
                return null;
            }
            $size = hexdec(trim(explode(';', substr($buf, $pos, $eol - $pos))[0]));
            $pos = $eol + 2;
            if ($size === 0) {
                $end = strpos($buf, "\r\n\r\n", $pos - 2); // optional trailers end with a blank line
                return $end === false ? null : [$body, $end + 4];
            }
            if (strlen($body) + $size > $max) {
                return false;
            }
            if (strlen($buf) < $pos + $size + 2) {
                return null;
            }
            $body .= substr($buf, $pos, $size);
            $pos += $size + 2;
        }
    }

    private function plainError(int $id, int $status, string $text): void
    {
        $this->conns[$id]['keep'] = false;
        $this->conns[$id]['busy'] = true;
        $this->conns[$id]['req'] ??= ['-', '-', '1.1', '-', '-'];
        $this->respond($id, $status, [['Content-Type', 'text/plain']], $text . "\n");
    }

    private function respond(int $id, int $status, array $headers, string $body, string $reason = ''): void
    {
        if (!isset($this->conns[$id])) {
            return; // the client went away
        }
        $c = &$this->conns[$id];
        [$method, $target, $version, $agent, $referer] = $c['req'];
        $head = sprintf("HTTP/1.1 %d %s\r\n", $status, $reason !== '' ? $reason : kl_reason($status));
        foreach ($headers as [$name, $value]) {
            $l = strtolower($name);
            if ($l === 'content-length' || $l === 'connection' || $l === 'transfer-encoding') {
                continue;
            }
            $head .= "$name: $value\r\n";
        }
        $head .= 'Content-Length: ' . strlen($body) . "\r\n";
        if (!$c['keep']) {
            $head .= "Connection: close\r\n";
        } elseif ($version === '1.0') {
            $head .= "Connection: keep-alive\r\n"; // else an HTTP/1.0 client waits for the close (ab -k)
        }
        $c['out'] .= $head . "\r\n" . ($method === 'HEAD' ? '' : $body);
        $c['busy'] = false;
        $c['seen'] = microtime(true);
        $c['close'] = !$c['keep'];
        $this->logLines[] = sprintf("%s - - [%s] \"%s %s HTTP/%s\" %d %d \"%s\" \"%s\"\n", $c['peer'],
            gmdate('d/M/Y:H:i:s +0000'), $method, $target, $version, $status, strlen($body), $referer, $agent);
        unset($c);
        $this->flushConn($id);
        if (isset($this->conns[$id]) && !$this->conns[$id]['close'] && $this->conns[$id]['in'] !== '') {
            $this->parse($id); // a pipelined request is already buffered
        }
    }

    private function flushConn(int $id): void
    {
        if (!isset($this->conns[$id])) {
            return;
        }
        $c = &$this->conns[$id];
        if ($c['out'] !== '') {
            $n = @fwrite($c['sock'], $c['out']);
            if ($n === false) {
                unset($c);
                $this->closeConn($id);
                return;
            }
            $c['out'] = (string) substr($c['out'], $n);
        }
        if ($c['out'] === '' && $c['close']) {
            unset($c);
            $this->closeConn($id);
        }
    }

    /** Keep-alive connections idle for long are closed (at most once a second). */
    private function closeIdle(): void
    {
        $now = microtime(true);
        if ($now - $this->swept < 1.0) {
            return;
        }
        $this->swept = $now;
        // as PID 1 of a container we inherit runners whose zygote already left: reap them
        while (pcntl_waitpid(-1, $status, WNOHANG) > 0) {
        }
        foreach ($this->conns as $id => $c) {
            if (!$c['busy'] && $c['out'] === '' && $now - $c['seen'] > self::IDLE_SECONDS) {
                $this->closeConn($id);
            }
        }
    }

    private function closeConn(int $id): void
    {
        @fclose($this->conns[$id]['sock']);
        unset($this->conns[$id]);
    }

    private function log(string $line): void
    {
        $this->logLines[] = $line . "\n";
    }

    private function flushLog(): void
    {
        if ($this->logLines) {
            fwrite(STDOUT, implode('', $this->logLines));
            $this->logLines = [];
        }
    }
}
