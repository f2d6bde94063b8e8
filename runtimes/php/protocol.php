<?php
/*
 * Kubeless PHP runtime: configuration from the environment, and the length-prefixed serialize()
 * frames every process (server, zygote, runner) speaks over the control socket.
 */

const KL_FRAME_MAX = 512 * 1024 * 1024;
const KL_BIG_BODY = 8 << 20; // a runner gives memory back to the OS after a call with a body this big

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
