// Allocate (and touch) as many MiB more as the body says; answer how many are held, two seconds later.
const held = []; // module state: what earlier calls allocated stays allocated

module.exports = {
  handler: async (event, context) => {
    const mib = parseInt(String(event.data), 10);
    for (let i = 0; i < mib; i++) held.push(Buffer.alloc(1 << 20, 1));
    await new Promise((resolve) => setTimeout(resolve, 2000));
    return String(held.length);
  },
};
