package io.kubeless;

// Prints a line naming its data, then answers the data.
public class handler {
    public String handler(Event event, Context context) {
        System.out.println("handling " + event.Data);
        return event.Data;
    }
}
