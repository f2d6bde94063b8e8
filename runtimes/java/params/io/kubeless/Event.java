package io.kubeless;

/**
 * The event a Kubeless Java function receives (kubeless/runtimes stable/java params): public fields, as
 * functions read them ({@code event.Data}), plus getters. An absent {@code event-*} header is "".
 * {@code Extensions} is kubeless-local's addition (upstream has none): the HTTP exchange of the call.
 */
public class Event {
    public String Data;
    public String EventID;
    public String EventType;
    public String EventTime;
    public String EventNamespace;
    public Extensions Extensions;

    public Event(String data, String eventId, String eventType, String eventTime, String eventNamespace) {
        this(data, eventId, eventType, eventTime, eventNamespace, null);
    }

    public Event(String data, String eventId, String eventType, String eventTime, String eventNamespace,
                 Extensions extensions) {
        this.Data = data;
        this.EventID = eventId;
        this.EventType = eventType;
        this.EventTime = eventTime;
        this.EventNamespace = eventNamespace;
        this.Extensions = extensions;
    }

    public String getData() { return Data; }
    public String getEventID() { return EventID; }
    public String getEventType() { return EventType; }
    public String getEventTime() { return EventTime; }
    public String getEventNamespace() { return EventNamespace; }
    public Extensions getExtensions() { return Extensions; }
}
