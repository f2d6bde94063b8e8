// Prints a line naming its data, then answers the data.
module.exports = {
  handler: (event, context) => {
    const text = Buffer.isBuffer(event.data) ? event.data.toString() : String(event.data);
    console.log(`handling ${text}`);
    return text;
  },
};
