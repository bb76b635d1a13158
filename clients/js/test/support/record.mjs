/** Listen to every kind of news a client gives and keep it, by name, in arrays (events as they came). */
export function record(client) {
  const seen = {};
  for (const name of ["event", "welcome", "resync", "disconnect", "stop", "state", "transport", "filter"]) {
    const list = (seen[`${name}s`] = []);
    client.on(name, (value) => list.push(value));
  }
  return seen;
}
