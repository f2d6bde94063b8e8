package io.kubeless;

public class handler {
    static volatile long spins;

    public String handler(Event event, Context context) {
        while (true) {
            spins++;
        }
    }
}
