<?php
/*
 * Kubeless PHP runtime: the processes that hold the user's code. The launcher forks a zygote per
 * code generation; the zygote (the file loaded) forks warm runners; a runner serves calls one at a
 * time (call.php) until the server closes its socket or kills it.
 */


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
        // After a big body, drop this call's data now (not at the next call) and give the memory back.
        $big = strlen($req[4]) >= KL_BIG_BODY;
        unset($req, $reply);
        if ($big) {
            $_SERVER = $_POST = $_GET = [];
            gc_collect_cycles();
            gc_mem_caches();
        }
    }
}
