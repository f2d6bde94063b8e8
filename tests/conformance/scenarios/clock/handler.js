// The offset of the local time zone from UTC, as +HHMM: a pod's is +0000 (no TZ, the image's UTC).
module.exports = {
  handler: () => {
    const minutes = -new Date().getTimezoneOffset();
    const whole = Math.abs(minutes);
    const pad = (n) => String(n).padStart(2, '0');
    return `${minutes < 0 ? '-' : '+'}${pad(Math.floor(whole / 60))}${pad(whole % 60)}`;
  },
};
