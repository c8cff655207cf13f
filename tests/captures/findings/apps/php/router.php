<?php
// PHP built-in server router: php -S 127.0.0.1:PORT -d display_errors=1 router.php
$path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);

function find_user(array $users, string $id) {
    return $users[$id]['name'];
}

switch ($path) {
    case '/api/status':
        header('Content-Type: application/json');
        echo json_encode(['status' => 'ok', 'queue' => 4, 'version' => '2.4.1']);
        break;
    case '/api/user':
        header('Content-Type: application/json');
        $name = find_user([], $_GET['id'] ?? '7');   // Warning: Undefined array key
        echo json_encode(['id' => $_GET['id'] ?? '7', 'name' => $name]);
        break;
    case '/api/checkout':
        throw new RuntimeException('payment gateway timeout');
    case '/api/search':
        $db = new PDO('sqlite::memory:');
        $db->setAttribute(PDO::ATTR_ERRMODE, PDO::ERRMODE_EXCEPTION);
        $q = $_GET['q'] ?? '';
        $db->query("SELECT name FROM products WHERE name LIKE '%" . $q . "%'");
        break;
    case '/api/total':
        echo intdiv(10, 0);
        break;
    case '/info':
        phpinfo();
        break;
    default:
        http_response_code(404);
        header('Content-Type: application/json');
        echo json_encode(['error' => 'not found']);
}
