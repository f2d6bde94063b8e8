package io.kubeless;

// Output at load without a newline: the runtime's next line (in the pod, its log's next line) follows it.
public class handler {
    static {
        System.out.print("loading config...");
        System.out.flush();
    }

    public String handler(Event event, Context context) {
        return "hello world";
    }
}
