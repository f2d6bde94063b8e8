<?php
/*
 * Kubeless PHP runtime server (contract §5), without the legacy Go proxy + nginx + php-fpm stack.
 *
 * Processes (all this one file, picked by argv[1]):
 *   server    (no argv)    HTTP on FUNC_PORT: parses requests, serves /healthz and /metrics, keeps
 *                          the metrics, hands each call to an idle runner, enforces FUNC_TIMEOUT.
 *   launcher  (--launcher) started first, so it holds none of the server's sockets; on "gen N" it
 *                          forks a zygote for code generation N (one per load / SIGHUP).
 *   zygote                 chdir($KUBELESS_INSTALL_VOLUME), includes the deps autoloader and
 *                          $MOD_NAME.php at global scope, then forks runners on the server's request.
 *   runner                 a warm copy of the zygote: runs calls one at a time. Killed (SIGKILL) by the
 *                          server when a call overruns FUNC_TIMEOUT -> 408, then replaced.
 * Zygotes and runners talk to the server over a unix socket with length-prefixed serialize() frames.
 *
 * SIGHUP: a new zygote loads the file again; on success the runner pool is replaced, on failure the
 * error is printed and the last good code (old zygote and runners, still in memory) keeps serving.
 */

const KL_FRAME_MAX = 512 * 1024 * 1024;

function kl_env(string $name, ?string $default = null): ?string
{
    $v = getenv($name);
    return ($v === false || $v === '') ? $default : $v;
}

function kl_config(): array
{
    return [
        'install' => rtrim(kl_env('KUBELESS_INSTALL_VOLUME', '/kubeless'), '/'),
        'module' => kl_env('MOD_NAME', ''),
        'handler' => kl_env('FUNC_HANDLER', ''),
        'timeout' => (float) kl_env('FUNC_TIMEOUT', '180'),
        'timeout_raw' => kl_env('FUNC_TIMEOUT', '180'),
        'port' => (int) kl_env('FUNC_PORT', '8080'),
        'bind' => kl_env('KUBELESS_LOCAL_BIND', '0.0.0.0'),
        'control' => kl_env('KUBELESS_LOCAL_CONTROL') === '1',
        'per_call' => kl_env('KUBELESS_LOCAL_ISOLATION', 'warm') === 'per-call',
        'min_runners' => max(1, (int) kl_env('KUBELESS_LOCAL_WORKERS', '2')),
        'max_runners' => max(1, (int) kl_env('KUBELESS_LOCAL_MAX_WORKERS', '10')),
        'body_max' => (int) kl_env('FUNC_MEMFILE_MAX', (string) (100 * 1024 * 1024)),
        'deps' => kl_env('KUBELESS_PHP_DEPS'),
        'psr7' => kl_env('KUBELESS_PHP_PSR7_AUTOLOAD', '/usr/share/php/Slim/Psr7/autoload.php'),
    ];
}

// ------------------------------------------------------------------ framing (all processes)

function kl_frame($message): string
{
    $payload = serialize($message);
    return pack('N', strlen($payload)) . $payload;
}

/** Pops complete frames off $buf. */
function kl_unframe(string &$buf): array
{
    $out = [];
    while (strlen($buf) >= 4) {
        $len = unpack('N', $buf)[1];
        if (strlen($buf) < 4 + $len) {
            break;
        }
        $out[] = unserialize(substr($buf, 4, $len));
        $buf = (string) substr($buf, 4 + $len);
    }
    return $out;
}

/** Blocking write of all bytes (also on a non-blocking stream). */
function kl_write_all($sock, string $data): bool
{
    while ($data !== '') {
        $n = @fwrite($sock, $data);
        if ($n === false) {
            return false;
        }
        if ($n === 0) {
            $r = null;
            $w = [$sock];
            $e = null;
            if (@stream_select($r, $w, $e, 5) === 0 && feof($sock)) {
                return false;
            }
            continue;
        }
        $data = (string) substr($data, $n);
    }
    return true;
}

/** Blocking read of one frame; null on EOF. */
function kl_read_frame($sock, string &$buf)
{
    while (true) {
        if (strlen($buf) >= 4) {
            $len = unpack('N', $buf)[1];
            if (strlen($buf) >= 4 + $len) {
                $msg = unserialize(substr($buf, 4, $len));
                $buf = (string) substr($buf, 4 + $len);
                return $msg;
            }
        }
        $chunk = fread($sock, 1 << 20);
        if ($chunk === false || ($chunk === '' && feof($sock))) {
            return null;
        }
        $buf .= $chunk;
    }
}

function kl_log(string $line): void
{
    fwrite(STDERR, $line . "\n");
}

// ------------------------------------------------------------------ launcher / zygote / runner

/**
 * Launcher loop. Returns only in a freshly forked zygote (with its generation), so that the
 * user's file is included at global scope by the caller.
 */
function kl_launcher_main(): int
{
    @cli_set_process_title('kubeless-php launcher');
    pcntl_signal(SIGCHLD, SIG_IGN); // zygotes are reaped by the kernel
    pcntl_signal(SIGHUP, SIG_IGN);
    pcntl_signal(SIGINT, SIG_IGN); // the server decides when we stop (stdin EOF)
    while (($line = fgets(STDIN)) !== false) {
        if (!preg_match('/^gen (\d+)$/', trim($line), $m)) {
            continue;
        }
        $pid = pcntl_fork();
        if ($pid === 0) {
            fclose(STDIN);
            @cli_set_process_title('kubeless-php zygote gen ' . $m[1]);
            return (int) $m[1];
        }
    }
    exit(0);
}

/** Connects to the server's control socket and introduces this process. */
function kl_connect(string $role, int $gen, array $extra = [])
{
    $sock = @stream_socket_client("unix://\0" . getenv('KUBELESS_PHP_CTL'), $errno, $errstr, 10);
    if ($sock === false) {
        exit(1); // the server is gone
    }
    stream_set_timeout($sock, 10 * 365 * 86400); // idle for good: no default_socket_timeout (60 s)
    kl_write_all($sock, kl_frame(['hello' => $role, 'gen' => $gen, 'pid' => getmypid()] + $extra));
    return $sock;
}

function kl_error_text(Throwable $e): string
{
    return sprintf("%s:%d: %s: %s", $e->getFile(), $e->getLine(), get_class($e), $e->getMessage());
}

/** Zygote after the user's file was included: forks runners on request until the server goes. */
function kl_zygote_main($sock, int $gen, array $cfg): void
{
    pcntl_signal(SIGCHLD, SIG_IGN);
    $buf = '';
    while (($msg = kl_read_frame($sock, $buf)) !== null) {
        for ($i = 0; $i < (int) ($msg['fork'] ?? 0); $i++) {
            $pid = pcntl_fork();
            if ($pid === 0) {
                fclose($sock);
                kl_runner_main($gen, $cfg);
                posix_kill(getmypid(), SIGKILL); // skip PHP's slow shutdown
            }
        }
    }
    exit(0);
}

function kl_runner_main(int $gen, array $cfg): void
{
    pcntl_signal(SIGCHLD, SIG_DFL); // user code may proc_open/waitpid
    pcntl_signal(SIGHUP, SIG_IGN); // reloads are the server's business
    pcntl_signal(SIGINT, SIG_DFL);
    @cli_set_process_title('kubeless-php runner gen ' . $gen);
    $sock = kl_connect('runner', $gen);
    $GLOBALS['__kl_runner_sock'] = $sock;
    $GLOBALS['__kl_in_call'] = false;
    register_shutdown_function(function () {
        // the function called exit() or hit a fatal error: answer the call before dying
        if (!$GLOBALS['__kl_in_call']) {
            return;
        }
        $err = error_get_last();
        $text = $err ? sprintf('%s:%d: %s', $err['file'], $err['line'], $err['message']) : 'the function called exit()';
        kl_log("function failed: $text");
        kl_write_all($GLOBALS['__kl_runner_sock'], kl_frame([
            'status' => 500, 'reason' => 'Internal Server Error', 'headers' => [['Content-Type', 'text/plain']],
            'body' => "Internal Server Error\n", 'counted' => true, 'failed' => true, 'exit' => true,
        ]));
    });
    $buf = '';
    while (($req = kl_read_frame($sock, $buf)) !== null) {
        // backstop if the server itself is gone: the kernel stops a runaway call (SIGALRM's default action)
        pcntl_alarm((int) ceil($cfg['timeout']) + 5);
        $GLOBALS['__kl_in_call'] = true;
        $reply = kl_run_call($req, $cfg);
        $GLOBALS['__kl_in_call'] = false;
        pcntl_alarm(0);
        if (!kl_write_all($sock, kl_frame($reply))) {
            return;
        }
    }
}

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

    if (!is_callable($cfg['handler'])) {
        $msg = sprintf('Function %s not exist', $cfg['handler']);
        kl_log(sprintf('%s/%s.php: %s', $cfg['install'], $cfg['module'], $msg));
        return kl_reply(500, [['Content-Type', 'text/plain']], $msg . "\n", false, true);
    }
    try {
        $result = call_user_func($cfg['handler'], $event, $context);
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

// ------------------------------------------------------------------ server

final class KlServer
{
    private array $cfg;
    private $listen;
    private $ctl;
    private $launcher;
    private $launcherIn;

    private int $requestedGen = 0;   // last generation asked of the launcher
    private int $gen = -1;           // generation serving calls
    private bool $announced = false; // "ready" printed for $gen
    private array $zygotes = [];     // gen => ['sock', 'pid']
    private array $spawning = [];    // gen => runners asked for and not yet connected
    private array $pending = [];     // id => ['sock', 'buf'] control connections before hello
    private array $runners = [];     // id => runner
    private array $idle = [];        // id => true
    private array $queue = [];       // waiting calls: ['conn', 'req', 'deadline', 'start', 'label']
    private array $conns = [];       // id => client connection
    private array $metrics = [];     // label => ['calls', 'failures', 'sum', 'buckets' => []]
    private array $logLines = [];
    private float $swept = 0.0;
    private bool $hup = false;
    private bool $stop = false;
    private ?string $loadError = null;

    private const MAX_CONNS = 900;
    private const IDLE_SECONDS = 75.0;
    // prometheus_client's default buckets, printed as it prints them
    private const BUCKETS = ['0.005', '0.01', '0.025', '0.05', '0.1', '0.25', '0.5', '1.0', '2.5', '5.0', '10.0'];

    public function __construct(array $cfg)
    {
        $this->cfg = $cfg;
    }

    private function control(string $event, array $fields = []): void
    {
        if ($this->cfg['control']) {
            $this->flushLog();
            fwrite(STDOUT, '@kubeless-local ' . json_encode(['event' => $event] + $fields, JSON_UNESCAPED_SLASHES) . "\n");
        }
    }

    public function run(): int
    {
        $cfg = $this->cfg;
        foreach (['pcntl_fork' => 'pcntl', 'posix_kill' => 'posix'] as $fn => $ext) {
            if (!function_exists($fn)) {
                kl_log("the PHP runtime needs the $ext extension (Debian: php8.2-cli / php8.2-common)");
                return 2;
            }
        }
        if ($cfg['module'] === '' || $cfg['handler'] === '') {
            kl_log('MOD_NAME and FUNC_HANDLER must be set');
            $this->control('load-failed', ['generation' => 0, 'error' => 'MOD_NAME and FUNC_HANDLER must be set']);
            return 2;
        }
        // control socket name first, so that the launcher (started before any socket) knows it;
        // an abstract unix socket: nothing to clean up on disk, even after a SIGKILL
        $ctlName = 'kubeless-php-' . getmypid() . '-' . bin2hex(random_bytes(6));
        putenv('KUBELESS_PHP_CTL=' . $ctlName);
        $this->launcher = proc_open([PHP_BINARY, __FILE__, '--launcher'],
            [0 => ['pipe', 'r'], 1 => STDOUT, 2 => STDERR], $pipes);
        if ($this->launcher === false) {
            kl_log('cannot start the launcher process');
            return 1;
        }
        $this->launcherIn = $pipes[0];
        $this->ctl = stream_socket_server("unix://\0" . $ctlName, $errno, $errstr);
        $ctx = stream_context_create(['socket' => ['backlog' => 1024, 'so_reuseaddr' => true]]);
        $host = strpos($cfg['bind'], ':') !== false ? '[' . $cfg['bind'] . ']' : $cfg['bind'];
        $this->listen = @stream_socket_server(sprintf('tcp://%s:%d', $host, $cfg['port']), $errno, $errstr,
            STREAM_SERVER_BIND | STREAM_SERVER_LISTEN, $ctx);
        if ($this->ctl === false || $this->listen === false) {
            kl_log(sprintf('cannot listen on %s:%d: %s', $cfg['bind'], $cfg['port'], $errstr));
            $this->control('load-failed', ['generation' => 0, 'error' => "cannot listen: $errstr"]);
            $this->shutdown();
            return 1;
        }
        stream_set_blocking($this->listen, false);
        stream_set_blocking($this->ctl, false);

        pcntl_async_signals(true);
        pcntl_signal(SIGHUP, function () { $this->hup = true; });
        pcntl_signal(SIGTERM, function () { $this->stop = true; });
        pcntl_signal(SIGINT, function () { $this->stop = true; });
        pcntl_signal(SIGPIPE, SIG_IGN);

        $this->load(0);
        $code = $this->loop();
        $this->shutdown();
        return $code;
    }

    private function load(int $gen): void
    {
        $this->requestedGen = $gen;
        if (!@fwrite($this->launcherIn, "gen $gen\n")) {
            $this->loadFailed($gen, 'the PHP launcher process is gone; restart the function');
        }
    }

    private function loop(): int
    {
        while (!$this->stop) {
            if ($this->hup) {
                $this->hup = false;
                $this->load($this->requestedGen + 1);
            }
            $read = [$this->ctl];
            if (count($this->conns) < self::MAX_CONNS) {
                $read[] = $this->listen; // stream_select() is select(): stay below FD_SETSIZE
            }
            foreach ($this->pending as $p) {
                $read[] = $p['sock'];
            }
            foreach ($this->zygotes as $z) {
                $read[] = $z['sock'];
            }
            foreach ($this->runners as $r) {
                $read[] = $r['sock'];
            }
            $write = [];
            foreach ($this->conns as $c) {
                if (!$c['busy']) {
                    $read[] = $c['sock'];
                }
                if ($c['out'] !== '') {
                    $write[] = $c['sock'];
                }
            }
            $this->flushLog();
            $wait = $this->nextDeadline();
            $except = null;
            $n = @stream_select($read, $write, $except, $wait === null ? 1 : (int) $wait,
                $wait === null ? 0 : (int) (($wait - floor($wait)) * 1e6));
            if ($n === false) {
                continue; // interrupted by a signal
            }
            foreach ($write as $sock) {
                $this->flushConn((int) $sock);
            }
            foreach ($read as $sock) {
                $id = (int) $sock;
                if ($sock === $this->listen) {
                    $this->accept();
                } elseif ($sock === $this->ctl) {
                    while (($s = @stream_socket_accept($this->ctl, 0)) !== false) {
                        $this->pending[(int) $s] = ['sock' => $s, 'buf' => ''];
                    }
                } elseif (isset($this->pending[$id])) {
                    $this->readPending($id);
                } elseif (isset($this->runners[$id])) {
                    $this->readRunner($id);
                } elseif (isset($this->conns[$id])) {
                    $this->readConn($id);
                } else {
                    foreach ($this->zygotes as $gen => $z) {
                        if ($z['sock'] === $sock) {
                            $this->readZygote($gen);
                        }
                    }
                }
            }
            $this->expire();
            $this->closeIdle();
            if ($this->gen < 0 && $this->loadError !== null) {
                return 3; // the first load failed
            }
        }
        return 0;
    }

    // ---- code generations

    private function readPending(int $id): void
    {
        $p = &$this->pending[$id];
        $chunk = fread($p['sock'], 65536);
        if ($chunk === '' || $chunk === false) {
            if (feof($p['sock'])) {
                fclose($p['sock']);
                unset($this->pending[$id]);
            }
            return;
        }
        $p['buf'] .= $chunk;
        $frames = kl_unframe($p['buf']);
        if (!$frames) {
            return;
        }
        $hello = array_shift($frames);
        $rest = implode('', array_map('kl_frame', $frames)) . $p['buf']; // frames sent right after hello
        $sock = $p['sock'];
        unset($p, $this->pending[$id]);
        $gen = $hello['gen'];
        if ($hello['hello'] === 'zygote') {
            $this->zygotes[$gen] = ['sock' => $sock, 'pid' => $hello['pid'], 'buf' => $rest, 'loaded' => false];
            $this->zygoteFrames($gen);
        } else {
            stream_set_blocking($sock, false);
            $this->spawning[$gen] = max(0, ($this->spawning[$gen] ?? 1) - 1);
            if ($gen !== $this->gen) {
                fclose($sock); // an older generation: let it exit
                return;
            }
            $this->runners[$id] = ['sock' => $sock, 'pid' => $hello['pid'], 'gen' => $gen, 'buf' => '', 'call' => null, 'calls' => 0];
            $this->release($id);
            if (!$this->announced) {
                $this->announced = true;
                if ($gen === 0) {
                    $this->log(sprintf('Kubeless PHP runtime serving %s.%s on http://%s:%d/', $this->cfg['module'],
                        $this->cfg['handler'], $this->cfg['bind'], $this->cfg['port']));
                }
                $this->control('ready', ['generation' => $gen]);
            }
        }
    }

    private function readZygote(int $gen): void
    {
        $z = &$this->zygotes[$gen];
        $chunk = fread($z['sock'], 65536);
        if ($chunk === '' || $chunk === false) {
            if (feof($z['sock'])) {
                fclose($z['sock']);
                $loaded = $z['loaded'];
                unset($z, $this->zygotes[$gen]);
                if (!$loaded) {
                    $this->loadFailed($gen, 'the function file could not be loaded (see the error above)');
                }
            }
            return;
        }
        $z['buf'] .= $chunk;
        unset($z);
        $this->zygoteFrames($gen);
    }

    private function zygoteFrames(int $gen): void
    {
        $z = &$this->zygotes[$gen];
        foreach (kl_unframe($z['buf']) as $msg) {
            if (isset($msg['error'])) {
                fclose($z['sock']);
                unset($z, $this->zygotes[$gen]);
                $this->loadFailed($gen, $msg['error']);
                return;
            }
            if (isset($msg['missing']) && $this->gen >= 0) {
                // a reload that lost the handler is a mid-edit mistake: keep the last good code
                fclose($z['sock']);
                unset($z, $this->zygotes[$gen]);
                $this->loadFailed($gen, $msg['missing']);
                return;
            }
            $z['loaded'] = true;
            if (isset($msg['missing'])) {
                kl_log($msg['missing'] . '; calls will answer 500'); // at start: as legacy Kubeless
            }
            if ($gen > $this->gen) {
                $this->activate($gen);
            } else {
                fclose($z['sock']);
                unset($z, $this->zygotes[$gen]);
            }
            return;
        }
    }

    private function loadFailed(int $gen, string $error): void
    {
        kl_log($error);
        $this->control('load-failed', ['generation' => $gen, 'error' => $error]);
        if ($this->gen < 0) {
            $this->loadError = $error;
        }
    }

    /** Generation $gen loaded: it takes over; the previous zygote and idle runners go. */
    private function activate(int $gen): void
    {
        $this->gen = $gen;
        $this->announced = false;
        foreach ($this->zygotes as $g => $z) {
            if ($g < $gen) {
                fclose($z['sock']);
                unset($this->zygotes[$g]);
            }
        }
        foreach (array_keys($this->idle) as $id) {
            $this->dropRunner($id, false);
        }
        $this->topUp();
    }

    private function topUp(): void
    {
        if (!isset($this->zygotes[$this->gen])) {
            return;
        }
        $live = 0;
        foreach ($this->runners as $r) {
            $live += $r['gen'] === $this->gen ? 1 : 0;
        }
        $spawning = $this->spawning[$this->gen] ?? 0;
        $want = max($this->cfg['min_runners'], min($this->cfg['max_runners'], $live + count($this->queue)));
        $n = $want - $live - $spawning;
        if ($n > 0) {
            $this->spawning[$this->gen] = $spawning + $n;
            kl_write_all($this->zygotes[$this->gen]['sock'], kl_frame(['fork' => $n]));
        }
    }

    private function release(int $id): void
    {
        $r = &$this->runners[$id];
        $r['call'] = null;
        if ($r['gen'] !== $this->gen || ($this->cfg['per_call'] && $r['calls'] > 0)) {
            unset($r);
            $this->dropRunner($id, false);
            $this->topUp();
            return;
        }
        unset($r);
        $this->idle[$id] = true;
        while ($this->queue && $this->idle) {
            $call = array_shift($this->queue);
            if (isset($this->conns[$call['conn']])) {
                $this->dispatch($call);
            }
        }
    }

    private function dropRunner(int $id, bool $kill): void
    {
        $r = $this->runners[$id];
        if ($kill) {
            posix_kill($r['pid'], SIGKILL);
        }
        fclose($r['sock']); // an idle runner exits on EOF
        unset($this->runners[$id], $this->idle[$id]);
    }

    // ---- calls

    private function startCall(int $connId, array $req): void
    {
        $now = microtime(true);
        $label = $req[0] === 'HEAD' ? 'GET' : $req[0];
        $call = ['conn' => $connId, 'req' => $req, 'start' => $now, 'deadline' => $now + $this->cfg['timeout'], 'label' => $label];
        if ($this->idle && isset($this->zygotes[$this->gen])) {
            $this->dispatch($call);
            return;
        }
        $this->queue[] = $call;
        $this->topUp();
    }

    private function dispatch(array $call): void
    {
        $id = array_key_last($this->idle); // LIFO: sequential calls reuse the warmest runner
        unset($this->idle[$id]);
        $r = &$this->runners[$id];
        $r['call'] = $call;
        $r['calls']++;
        if (!kl_write_all($r['sock'], kl_frame($call['req']))) {
            unset($r);
            $this->runnerDied($id);
        }
    }

    private function readRunner(int $id): void
    {
        $r = &$this->runners[$id];
        $chunk = fread($r['sock'], 1 << 20);
        if ($chunk === '' || $chunk === false) {
            if (feof($r['sock'])) {
                unset($r);
                $this->runnerDied($id);
            }
            return;
        }
        $r['buf'] .= $chunk;
        foreach (kl_unframe($r['buf']) as $reply) {
            $call = $r['call'];
            if ($call === null) {
                continue;
            }
            if ($reply['counted']) {
                $this->observe($call['label'], microtime(true) - $call['start'], $reply['failed']);
            }
            $this->respond($call['conn'], $reply['status'], $reply['headers'], $reply['body'], $reply['reason']);
            if (!empty($reply['exit'])) {
                unset($r);
                $this->dropRunner($id, true);
                $this->topUp();
                return;
            }
            unset($r);
            $this->release($id);
            return;
        }
    }

    /** The runner's connection closed: it crashed (segfault, OOM kill) or was told to go. */
    private function runnerDied(int $id): void
    {
        $call = $this->runners[$id]['call'];
        $this->dropRunner($id, true);
        if ($call !== null) {
            kl_log('the function process exited during the call');
            $this->observe($call['label'], microtime(true) - $call['start'], true);
            $this->respond($call['conn'], 500, [['Content-Type', 'text/plain']], "Internal Server Error\n");
        }
        $this->topUp();
    }

    private function nextDeadline(): ?float
    {
        $next = null;
        foreach ($this->runners as $r) {
            if ($r['call'] !== null) {
                $next = $next === null ? $r['call']['deadline'] : min($next, $r['call']['deadline']);
            }
        }
        foreach ($this->queue as $c) {
            $next = $next === null ? $c['deadline'] : min($next, $c['deadline']);
        }
        return $next === null ? null : max(0.0, min(1.0, $next - microtime(true)));
    }

    /** Calls past FUNC_TIMEOUT: the runner is killed (the code really stops) and the caller gets 408. */
    private function expire(): void
    {
        $now = microtime(true);
        foreach ($this->runners as $id => $r) {
            if ($r['call'] !== null && $r['call']['deadline'] <= $now) {
                $this->dropRunner($id, true);
                $this->timedOut($r['call']);
                $this->topUp();
            }
        }
        foreach ($this->queue as $i => $call) {
            if ($call['deadline'] <= $now) {
                unset($this->queue[$i]);
                $this->timedOut($call);
            }
        }
        $this->queue = array_values($this->queue);
    }

    private function timedOut(array $call): void
    {
        kl_log(sprintf('function timed out after %ss', $this->cfg['timeout_raw']));
        // counted as a failure, as the legacy proxy in front of PHP did (contract §5)
        $this->observe($call['label'], microtime(true) - $call['start'], true);
        $this->respond($call['conn'], 408, [['Content-Type', 'text/plain']], "Timeout while processing the function\n");
    }

    private function observe(string $label, float $seconds, bool $failed): void
    {
        if (!isset($this->metrics[$label])) {
            $this->metrics[$label] = ['calls' => 0, 'failures' => 0, 'sum' => 0.0, 'buckets' => array_fill(0, count(self::BUCKETS), 0)];
        }
        $m = &$this->metrics[$label];
        $m['calls']++;
        $m['failures'] += $failed ? 1 : 0;
        $m['sum'] += $seconds;
        foreach (self::BUCKETS as $i => $le) {
            if ($seconds <= (float) $le) {
                $m['buckets'][$i]++;
            }
        }
    }

    private function metricsText(): string
    {
        $fmt = fn (float $v) => rtrim(rtrim(sprintf('%.9F', $v), '0'), '.') ?: '0';
        $lines = ['# HELP function_duration_seconds Duration of user function in seconds',
            '# TYPE function_duration_seconds histogram'];
        foreach ($this->metrics as $label => $m) {
            $l = addcslashes($label, "\\\"\n");
            foreach (self::BUCKETS as $i => $le) {
                $lines[] = sprintf('function_duration_seconds_bucket{method="%s",le="%s"} %d', $l, $le, $m['buckets'][$i]);
            }
            $lines[] = sprintf('function_duration_seconds_bucket{method="%s",le="+Inf"} %d', $l, $m['calls']);
            $lines[] = sprintf('function_duration_seconds_count{method="%s"} %d', $l, $m['calls']);
            $lines[] = sprintf('function_duration_seconds_sum{method="%s"} %s', $l, $fmt($m['sum']));
        }
        $lines[] = '# HELP function_calls_total Number of calls to user function';
        $lines[] = '# TYPE function_calls_total counter';
        foreach ($this->metrics as $label => $m) {
            $lines[] = sprintf('function_calls_total{method="%s"} %d', addcslashes($label, "\\\"\n"), $m['calls']);
        }
        $lines[] = '# HELP function_failures_total Number of exceptions in user function';
        $lines[] = '# TYPE function_failures_total counter';
        foreach ($this->metrics as $label => $m) {
            $lines[] = sprintf('function_failures_total{method="%s"} %d', addcslashes($label, "\\\"\n"), $m['failures']);
        }
        return implode("\n", $lines) . "\n";
    }

    // ---- HTTP

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
        $headers = [];
        $lower = [];
        foreach ($lines as $line) {
            $colon = strpos($line, ':');
            if ($colon === false) {
                continue;
            }
            $name = substr($line, 0, $colon);
            $value = trim(substr($line, $colon + 1));
            $headers[] = [$name, $value];
            $lower[strtolower($name)] = $value;
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
            $this->respond($id, 200, [['Content-Type', 'text/plain; version=0.0.4; charset=utf-8']], $this->metricsText());
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

    private function shutdown(): void
    {
        $this->flushLog();
        foreach (array_keys($this->runners) as $id) {
            $this->dropRunner($id, true);
        }
        foreach ($this->zygotes as $z) {
            fclose($z['sock']);
        }
        if ($this->launcherIn) {
            fclose($this->launcherIn);
            proc_close($this->launcher);
        }
    }
}

// ------------------------------------------------------------------ entry point (global scope)

ini_set('display_errors', 'stderr');
ini_set('log_errors', '0'); // display_errors already prints to stderr
error_reporting(E_ALL);
$__kl_cfg = kl_config();

if (($argv[1] ?? '') !== '--launcher') {
    exit((new KlServer($__kl_cfg))->run());
}

$__kl_gen = kl_launcher_main(); // returns in a new zygote
$__kl_sock = kl_connect('zygote', $__kl_gen);
$__kl_loading = true;
register_shutdown_function(function () use (&$__kl_loading, $__kl_sock) {
    // a fatal error while loading (e.g. "Cannot redeclare"): tell the server what and where
    $err = error_get_last();
    if ($__kl_loading) {
        $text = $err ? sprintf('%s:%d: %s', $err['file'], $err['line'], $err['message']) : 'the function file exited while loading';
        kl_write_all($__kl_sock, kl_frame(['error' => $text]));
    }
});
require $__kl_cfg['psr7'];
$__kl_file = $__kl_cfg['install'] . '/' . $__kl_cfg['module'] . '.php';
if ($__kl_cfg['deps'] !== null) {
    // `require 'vendor/autoload.php'` in legacy functions resolves through the include path
    set_include_path('.' . PATH_SEPARATOR . $__kl_cfg['deps'] . PATH_SEPARATOR . get_include_path());
}
try {
    if (!chdir($__kl_cfg['install'])) {
        throw new RuntimeException("cannot chdir to {$__kl_cfg['install']}");
    }
    if ($__kl_cfg['deps'] !== null && is_file($__kl_cfg['deps'] . '/vendor/autoload.php')) {
        require_once $__kl_cfg['deps'] . '/vendor/autoload.php';
    }
    if (!is_file($__kl_file)) {
        throw new RuntimeException("$__kl_file cannot be found");
    }
    include $__kl_file;
    $__kl_loading = false;
    $__kl_base_server = $_SERVER;
    $__kl_hello = ['loaded' => true];
    if (!is_callable($__kl_cfg['handler'])) {
        $__kl_hello['missing'] = sprintf('%s: function %s is not defined (spec.handler is %s.%s)%s',
            $__kl_file, $__kl_cfg['handler'], $__kl_cfg['module'], $__kl_cfg['handler'],
            strpos((string) file_get_contents($__kl_file), '<?php') === false ? '; the file has no <?php tag' : '');
    }
} catch (Throwable $__kl_e) {
    $__kl_loading = false;
    kl_write_all($__kl_sock, kl_frame(['error' => kl_error_text($__kl_e)]));
    exit(1);
}
kl_warm_up();
kl_write_all($__kl_sock, kl_frame($__kl_hello));
kl_zygote_main($__kl_sock, $__kl_gen, $__kl_cfg);
