<?php
/*
 * Kubeless PHP runtime: the server's side of the code generations (one zygote per load) and of the
 * runner pool: warm runners, most recently used first; a call waits in the queue for an idle
 * runner; a call past FUNC_TIMEOUT kills its runner (408).
 */

trait KlPool
{
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
            $this->release($id, true);
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
            $z['loaded'] = true;
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
        // under kubeless-local the engine shows the error (once); standalone it goes to stderr
        if ($this->cfg['control']) {
            $this->control('load-failed', ['generation' => $gen, 'error' => $error]);
        } else {
            kl_log($error);
        }
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

    /**
     * The runner is idle. $this->idle is a stack, the most recently used runner on top (last), so that
     * sequential calls reuse the warm runner; a fresh runner goes to the bottom, behind the warm ones.
     */
    private function release(int $id, bool $fresh = false): void
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
        if ($fresh) {
            $this->idle = [$id => true] + $this->idle;
        } else {
            $this->idle[$id] = true;
        }
        while ($this->queue && $this->idle) {
            $call = array_shift($this->queue);
            if (isset($this->conns[$call['conn']])) {
                $this->dispatch($call);
            }
        }
    }

    /** The processes $pid started and theirs, while they are its (Linux /proc; none found elsewhere). */
    private function startedBy(int $pid): array
    {
        $found = [];
        $parents = [$pid];
        while ($parents) {
            $paths = glob('/proc/' . array_pop($parents) . '/task/*/children') ?: [];
            foreach ($paths as $path) {
                $text = @file_get_contents($path);
                $words = $text === false ? [] : preg_split('/\s+/', trim($text), -1, PREG_SPLIT_NO_EMPTY);
                $pids = array_map('intval', $words);
                array_push($found, ...$pids);
                array_push($parents, ...$pids);
            }
        }
        return $found;
    }

    /**
     * SIGKILL $pid and every process it started: each is stopped first so that none starts another or leaves the
     * tree meanwhile; read again until no new one shows (bounded). Killed alone, they would run on, under init.
     */
    private function killWithWhatItStarted(int $pid): void
    {
        $stopped = [$pid];
        posix_kill($pid, SIGSTOP);
        for ($pass = 0; $pass < 5; $pass++) {
            $new = array_diff($this->startedBy($pid), $stopped);
            if (!$new) {
                break;
            }
            foreach ($new as $child) {
                posix_kill($child, SIGSTOP);
            }
            array_push($stopped, ...$new);
        }
        foreach ($stopped as $each) {
            posix_kill($each, SIGKILL);
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
        $id = array_key_last($this->idle); // the most recently used runner (see release())
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
                $this->metrics->observe($call['label'], microtime(true) - $call['start'], $reply['failed']);
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
            $this->metrics->observe($call['label'], microtime(true) - $call['start'], true);
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
                // with what the call started (a subprocess, a shell of its own), which would run on
                $this->killWithWhatItStarted($r['pid']);
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
        $this->metrics->observe($call['label'], microtime(true) - $call['start'], true);
        $this->respond($call['conn'], 408, [['Content-Type', 'text/plain']], "Timeout while processing the function\n");
    }
}
