package io.kubeless;

// Handler Hello.sayHello: class io.kubeless.Hello in Hello.java, method sayHello(Event, Context).
// event.Data is the request body as a string; event.EventID, EventType, EventTime and EventNamespace
// come from the event-* headers ("" when absent); context.Timeout, Runtime… are strings.
public class Hello {
    public String sayHello(io.kubeless.Event event, io.kubeless.Context context) {
        if (event.Data.isEmpty()) {
            return "Hello world!";
        }
        return "Hello, you sent: " + event.Data;
    }
}
