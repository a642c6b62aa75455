(define (problem plan_trial_handmade_look_at_cd)
(:domain alfred)
(:objects
agent1 - agent
CDType - otype
DeskLampType - otype
PenType - otype
PencilType - otype
DeskType - rtype
BedType - rtype
DrawerType - rtype
cd - object
desklamp - object
pen - object
pencil - object
desk - receptacle
bed - receptacle
drawer - receptacle
startloc - location
deskloc - location
bedloc - location
drawerloc - location
)
(:init
(receptacleType desk DeskType)
(receptacleType bed BedType)
(receptacleType drawer DrawerType)
(objectType cd CDType)
(objectType desklamp DeskLampType)
(objectType pen PenType)
(objectType pencil PencilType)
(canContain DeskType CDType)
(canContain DeskType PenType)
(canContain DeskType PencilType)
(canContain BedType CDType)
(canContain DrawerType CDType)
(canContain DrawerType PenType)
(canContain DrawerType PencilType)
(openable drawer)
(pickupable cd)
(pickupable pen)
(pickupable pencil)
(toggleable desklamp)
(atLocation agent1 startloc)
(inReceptacle cd bed)
(inReceptacle desklamp desk)
(inReceptacle pen desk)
(inReceptacle pencil drawer)
(receptacleAtLocation desk deskloc)
(receptacleAtLocation bed bedloc)
(receptacleAtLocation drawer drawerloc)
(objectAtLocation cd bedloc)
(objectAtLocation desklamp deskloc)
(objectAtLocation pen deskloc)
(objectAtLocation pencil drawerloc)
)

(:goal
     (and
         (exists (?ot - object
                  ?r - receptacle
                  ?a - agent
                  ?l - location)
             (and
                 (objectType ?ot DeskLampType)
                 (toggleable ?ot)
                 (isToggled ?ot)
                 (receptacleAtLocation ?r ?l)
                 (atLocation ?a ?l)
                 (inReceptacle ?ot ?r)
             )
         )
         (exists (?o - object
                  ?a - agent)
             (and
                 (objectType ?o CDType)
                 (holds ?a ?o)
             )
         )
     )
)
)
