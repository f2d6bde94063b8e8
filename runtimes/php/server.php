<?php
/*
 * Kubeless PHP runtime: the server process. Starts the launcher, listens on FUNC_PORT and on the
 * control socket, and runs one select() loop over clients (http.php), zygotes and runners (pool.php).
 */

final class KlServer
{
    use KlHttp;
    use KlPool;

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
    private KlMetrics $metrics;
    private array $logLines = [];
    private float $swept = 0.0;
    private bool $hup = false;
    private bool $stop = false;
    private ?string $loadError = null;

    private const EXIT_CANNOT_LISTEN = 4;
    private const MAX_CONNS = 900;
    private const IDLE_SECONDS = 75.0;

    public function __construct(array $cfg)
    {
        $this->cfg = $cfg;
        $this->metrics = new KlMetrics();
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
        $this->launcher = proc_open([PHP_BINARY, KL_MAIN, '--launcher'],
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
        if ($this->ctl === false) {
            kl_log("cannot create the control socket: $errstr");
            $this->shutdown();
            return 1;
        }
        if ($this->listen === false) {
            // not a load failure: the code is fine, the port is not (the engine may retry another one)
            kl_log(sprintf('cannot listen on %s:%d: %s', $cfg['bind'], $cfg['port'], $errstr));
            $this->shutdown();
            return self::EXIT_CANNOT_LISTEN;
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
                @chdir($this->cfg['install']); // as the zygote does: the link now names the new code
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
