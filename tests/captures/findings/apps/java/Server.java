// Java fixture server (JDK com.sun.net.httpserver): java Server.java PORT
// /api/quote?qty=abc fails to parse; the handler prints the stack trace into the response.
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.*;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;

public class Server {
    static class QuoteException extends RuntimeException {
        QuoteException(String m, Throwable cause) { super(m, cause); }
    }

    static int parseQty(String q) {
        try {
            return Integer.parseInt(q);
        } catch (NumberFormatException e) {
            throw new QuoteException("invalid quantity", e);
        }
    }

    static void send(HttpExchange ex, int status, String type, String body) throws IOException {
        byte[] b = body.getBytes(StandardCharsets.UTF_8);
        ex.getResponseHeaders().set("Content-Type", type);
        ex.sendResponseHeaders(status, b.length);
        try (OutputStream os = ex.getResponseBody()) { os.write(b); }
    }

    public static void main(String[] args) throws Exception {
        HttpServer server = HttpServer.create(new InetSocketAddress("127.0.0.1", Integer.parseInt(args[0])), 0);
        server.createContext("/api/quote", ex -> {
            String query = ex.getRequestURI().getQuery();
            String qty = query == null ? "" : query.replaceFirst("^qty=", "");
            try {
                int n = parseQty(qty);
                send(ex, 200, "application/json", "{\"qty\":" + n + ",\"unit\":\"EUR\",\"price\":12.5}");
            } catch (RuntimeException e) {
                StringWriter sw = new StringWriter();
                e.printStackTrace(new PrintWriter(sw));
                send(ex, 500, "text/plain; charset=utf-8", sw.toString());
            }
        });
        server.createContext("/api/ping", ex -> send(ex, 200, "application/json", "{\"pong\":true}"));
        server.createContext("/api/null", ex -> {
            try {
                String s = null;
                s.length();
            } catch (NullPointerException e) {
                StringWriter sw = new StringWriter();
                e.printStackTrace(new PrintWriter(sw));
                send(ex, 500, "application/json", "{\"error\":\"internal\",\"exception\":" + quote(sw.toString()) + "}");
            }
        });
        server.start();
    }

    static String quote(String s) {
        return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n").replace("\t", "\\t")
            .replace("\r", "") + "\"";
    }
}
