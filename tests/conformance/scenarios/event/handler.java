package io.kubeless;

public class handler {
    static String q(String s) {
        StringBuilder out = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') out.append('\\').append(c);
            else if (c < 0x20) out.append(String.format("\\u%04x", (int) c));
            else out.append(c);
        }
        return out.append('"').toString();
    }

    public String handler(Event event, Context context) {
        return "{\"data\": " + q(event.Data) + ", \"event-id\": " + q(event.EventID)
            + ", \"event-type\": " + q(event.EventType) + ", \"event-time\": " + q(event.EventTime)
            + ", \"event-namespace\": " + q(event.EventNamespace) + "}";
    }
}
