package io.kubeless;

public class handler {
    public String handler(Event event, Context context) throws InterruptedException {
        Thread.sleep((long) (Double.parseDouble(event.Data.trim()) * 1000));
        return "done";
    }
}
