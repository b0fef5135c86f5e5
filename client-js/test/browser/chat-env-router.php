<?php
// Router for `php -S` in test/browser/chat-demo.test.js (test only).
//
// The demo's backend reads its settings (CHAT_INGEST_URL, CHAT_COMETBOX_URL)
// from the environment, but the test can only know them after cometbox has
// started, and cometbox needs the demo's origin (its port) first for CORS. So
// `php -S` starts first on port 0 (it prints the port it bound), and this
// router puts the settings the test wrote into $CHAT_TEST_ENV_FILE (JSON, once
// cometbox is up) into the environment of each request, then lets the built-in
// server serve the requested file as usual.
declare(strict_types=1);

$file = getenv('CHAT_TEST_ENV_FILE');
if (is_string($file) && $file !== '' && is_file($file)) {
    $settings = json_decode((string) file_get_contents($file), true);
    if (is_array($settings)) {
        foreach ($settings as $name => $value) {
            if (is_string($name) && strncmp($name, 'CHAT_', 5) === 0 && is_string($value)) {
                putenv($name . '=' . $value);
            }
        }
    }
}
return false;
