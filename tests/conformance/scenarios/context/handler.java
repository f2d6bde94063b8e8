package io.kubeless;

public class handler {
    static String q(String s) {
        return s == null ? "null" : "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
    }

    public String handler(Event event, Context context) {
        return "{\"function-name\": " + q(context.FunctionName) + ", \"timeout\": " + q(context.Timeout)
            + ", \"runtime\": " + q(context.Runtime) + ", \"memory-limit\": " + q(context.MemoryLimit)
            + ", \"env\": " + q(System.getenv("MY_VAR")) + ", \"hostname\": " + q(System.getenv("HOSTNAME")) + "}";
    }
}
