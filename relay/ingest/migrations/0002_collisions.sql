-- A message whose id is already stored with other content (a daemon store
-- restored from a backup or copied, giving out ids again) is stored under
-- a disambiguated id "<id>~<16 hex of its content hash>" (longer than the
-- 255 characters an incoming id may have), with collision_of naming the id
-- it collided with.  Widening a varchar rewrites neither table nor index.

ALTER TABLE agent_messages ALTER COLUMN original_id TYPE varchar(300);
ALTER TABLE agent_messages ADD COLUMN collision_of varchar(255);
