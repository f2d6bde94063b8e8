// Called for every request, as in Kubeless.
//   event.data        the body: parsed JSON when Content-Type is application/json, else a string;
//                     {} when there is no body
//   event['event-id'], event['event-type'], event['event-time'], event['event-namespace']
//                     the trigger's headers (undefined when absent)
//   event.extensions.request / .response
//                     the Express request and response (req.get(), req.query, res.status(), ...)
//   context           { 'function-name', timeout, runtime, 'memory-limit' }
//
// Return a string (body as is), an object/array (sent as JSON), or a Promise of one (async works);
// or answer yourself through event.extensions.response.
module.exports = {
  hello: async (event, context) => {
    console.log('called with', event.data);
    if (typeof event.data === 'object' && event.data !== null && Object.keys(event.data).length) {
      return { hello: 'world', data: event.data };
    }
    return 'hello world';
  },
};
