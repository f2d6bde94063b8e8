<?php
/*
 * Kubeless PHP runtime server (contract §5), without the legacy Go proxy + nginx + php-fpm stack.
 *
 * Processes (all started from this file, picked by argv[1]):
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
 *
 * Files: protocol.php (config, frames), server.php (the server process and its loop), http.php
 * (HTTP parsing and responses), pool.php (code generations, runner pool, calls), metrics.php,
 * runner.php (launcher, zygote, runner), call.php (one call: event, context, result).
 */

define('KL_MAIN', __FILE__); // the launcher is this file again
require_once __DIR__ . '/protocol.php';
require_once __DIR__ . '/metrics.php';
require_once __DIR__ . '/http.php';
require_once __DIR__ . '/pool.php';
require_once __DIR__ . '/server.php';
require_once __DIR__ . '/runner.php';
require_once __DIR__ . '/call.php';

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
} catch (Throwable $__kl_e) {
    $__kl_loading = false;
    kl_write_all($__kl_sock, kl_frame(['error' => kl_error_text($__kl_e)]));
    exit(1);
}
// A handler the file does not define is a load failure, as in the other runtimes (legacy PHP started
// and answered 500 per call): a typo in spec.handler then keeps the last good code serving.
if (!is_callable($__kl_cfg['handler'])) {
    kl_write_all($__kl_sock, kl_frame(['error' => sprintf("%s:1: function '%s' is not defined in %s.php (spec.handler is %s.%s)%s",
        $__kl_file, $__kl_cfg['handler'], $__kl_cfg['module'], $__kl_cfg['module'], $__kl_cfg['handler'],
        strpos((string) file_get_contents($__kl_file), '<?php') === false ? '; the file has no <?php tag' : '')]));
    exit(1);
}
kl_warm_up();
kl_write_all($__kl_sock, kl_frame(['loaded' => true]));
kl_zygote_main($__kl_sock, $__kl_gen, $__kl_cfg);
