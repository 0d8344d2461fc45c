// The reliability campaign's length: one round by default, bounded for CI;
// VSERVER_CAMPAIGN_ROUNDS=N runs N (each round kills at other instants).

export const CAMPAIGN_ROUNDS = Math.max(1, Math.floor(Number(process.env.VSERVER_CAMPAIGN_ROUNDS ?? 1)) || 1);

/** The kill instant of round `round` within [min, max]: round 0 at min, the others spread over the range. */
export function killPoint(round: number, min: number, max: number): number {
  return round === 0 ? min : min + ((round * 37) % (max - min + 1));
}
