package io.kubeless;

// Prints a line it does not end (no newline): the runtime's access line follows it on stdout.
public class handler {
    public String handler(Event event, Context context) {
        System.out.print("no newline here");
        System.out.flush();
        return "done";
    }
}
