package io.kubeless;

public class handler {
    static int count;

    public synchronized String handler(Event event, Context context) {
        count++;
        return String.valueOf(count);
    }
}
