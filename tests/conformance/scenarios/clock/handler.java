package io.kubeless;

import java.text.SimpleDateFormat;
import java.util.Date;

// The offset of the local time zone from UTC, as +HHMM: a pod's is +0000 (no TZ, the image's UTC).
public class handler {
    public String handler(Event event, Context context) {
        return new SimpleDateFormat("Z").format(new Date());
    }
}
