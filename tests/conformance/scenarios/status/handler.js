module.exports = {
  handler: (event, context) => {
    event.extensions.response.status(201).set('X-Custom', 'yes').send('created');
  },
};
