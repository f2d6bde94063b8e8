package io.kubeless;

public class handler {
    public String handler(Event event, Context context) {
        return "hello world";
    }
}
